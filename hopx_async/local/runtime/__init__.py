"""The runtime layer: launching boxed processes, supervising them, reading their output,
and confining paths to a sandbox's workspace. No HTTP here (no aiohttp import).
"""
