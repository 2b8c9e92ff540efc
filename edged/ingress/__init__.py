"""Request intake over MQTT: parsing and validation, admission, and the responder."""
