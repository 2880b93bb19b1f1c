"""The HTTP layer: the aiohttp apps, their routes and middleware, and request parsing.

It reads requests and writes answers; what a request does is asked of ``service``.
"""
