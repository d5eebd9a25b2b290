"""The whole system: real daemon, chain and simulator, and the systemd units."""
