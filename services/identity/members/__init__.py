"""Members: resolve-or-create by (appid, openid) and unionid, links, merges and their undo, the member view."""
