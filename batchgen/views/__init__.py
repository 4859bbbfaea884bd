"""What people see: estimate, status, report, models."""
