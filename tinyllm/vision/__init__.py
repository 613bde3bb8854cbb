"""Vision data and training helpers (scikit-learn's ``load_digits``; the ``vision`` extra)."""
