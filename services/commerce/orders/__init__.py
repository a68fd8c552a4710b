"""The WeChat Shop order mirror: every order and after-sale event re-fetches the order; a reconcile walks the list."""
