"""The backend pool: one owned connection per backend, its transports (the lean wire or the SDK
client), reconnection.
"""
