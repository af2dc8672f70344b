"""One module per ``emolens`` subcommand; each defines ``register(app)``."""
