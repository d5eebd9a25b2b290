"""listener.reconcile: decisions and the reconciler."""
