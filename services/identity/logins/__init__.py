"""Mini-program logins: a ``wx.login`` code exchanged for the member, the session_key sealed at rest."""
