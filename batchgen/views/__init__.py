"""What people see: estimate, status and export, report."""
