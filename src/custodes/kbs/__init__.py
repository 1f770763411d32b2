"""The Key Broker Service: HTTP app, sessions, resources, admin API."""
