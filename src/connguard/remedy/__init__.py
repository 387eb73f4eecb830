"""remedy: the only code allowed to change a server (kill, config), and capacity planning (plan)."""
