"""Click commands, one module per area; ``psicbatch.cli`` assembles them."""
