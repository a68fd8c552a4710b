"""The member's points, orders, gifts, points mall, coupons and check-ins: commerce's, through the gateway."""
