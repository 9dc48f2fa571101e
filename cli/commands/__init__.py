"""The built-in ``carecrm`` commands, one module per area (each thin: parse the
options, call :class:`carecrm.core.CareCRM`, render the answer)."""
