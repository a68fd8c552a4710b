"""Coupons: welcome, tier and abandoned-order coupons with claim limits; use recorded from the shop."""
