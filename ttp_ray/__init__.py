"""ttp-ray: test-time personalization on Ray."""
__version__ = "0.1.0"
