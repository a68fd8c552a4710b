"""The operator API (`/admin/v1`): the member 360, the send log and campaigns."""
