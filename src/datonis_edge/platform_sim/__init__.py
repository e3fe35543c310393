"""A faithful local stand-in for the Datonis platform API. Imports nothing of the gateway."""
