"""An offline stand-in for WeChat: the API subset Siyu calls, virtual users, and signed pushes.

``create_app`` builds the ASGI app; ``python -m tools.wechat_sandbox`` serves it. See README.md.
"""

from tools.wechat_sandbox.app import create_app

__all__ = ["create_app"]
