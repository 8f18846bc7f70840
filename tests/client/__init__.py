"""The clients in process, over respx: settings, errors, retries, models, security, threads."""
