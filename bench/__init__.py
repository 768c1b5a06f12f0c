"""`python -m bench`: this service measured against the peers a user could pick instead."""
