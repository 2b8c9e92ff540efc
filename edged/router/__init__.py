"""The router: pure policy functions that pick a backend for each request."""
