"""The REST API under /api/v1/ (DRF): thin views over the same selectors and services as the web pages."""
