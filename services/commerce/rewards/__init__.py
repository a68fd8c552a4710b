"""The points mall: rewards with stock, redemptions that reserve, fulfil and commit (or release)."""
