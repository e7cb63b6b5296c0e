"""Custom ops and the public functions built on them."""
