"""Mini-program sign-in: a wx.login code becomes the gateway's own session token."""
