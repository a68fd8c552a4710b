"""What the mini-program tells notify: subscribe-message answers and the pages messages opened."""
