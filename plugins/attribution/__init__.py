"""Built-in attribution plugins: the ``first_touch``, ``last_touch``, ``last_non_direct``
and ``linear`` models (:mod:`carecrm.plugins.attribution.basic`)."""
