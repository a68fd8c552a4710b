"""Tiers from rolling 12-month spend: up at once, down only at period end."""
