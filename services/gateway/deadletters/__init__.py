"""Dead letters for the operator: notify's dead sends and every consuming service's dead events."""
