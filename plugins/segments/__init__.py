"""Built-in segment builders: ``basic`` turns a simple spec (the ``carecrm segment`` flags,
a saved segment) into a filter tree (:mod:`carecrm.core.analytics.criteria`)."""
