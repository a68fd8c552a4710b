"""Behaviour events from the mini-program, orders and gifts: the profile rule tags read."""
