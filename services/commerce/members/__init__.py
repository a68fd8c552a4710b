"""What commerce does when identity says something about a member: a merge, a new member."""
