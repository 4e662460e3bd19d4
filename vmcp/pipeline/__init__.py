"""The one path every client request takes: identify, authorize, reshape, police, route, forward,
observe; and the HTTP app around it.
"""
