"""How we speak to the service: client, records, retry, request budget."""
