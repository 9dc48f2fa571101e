"""Built-in scoring plugins: the ``points`` model (rules from config) and live rescoring
on committed events."""
