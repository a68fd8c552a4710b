"""Follow state on the service accounts, in WeChat's order, with first- and last-touch attribution."""
