"""Affiliate (推客/分享员) attribution of shop orders."""
