"""Reconciliation: per UTC pickup day, every ride acknowledged is stored, indexed and archived.

``python -m reconcile run`` prints the per-day table and names the booking ids that differ;
``python -m reconcile serve`` exports the same as ``xrides_reconcile_*`` metrics on port 9105.
How each stage is counted: :mod:`reconcile.reconciler`; docs/reconciliation.md.
"""

from reconcile.reconciler import Reconciler
from reconcile.report import Report
from reconcile.settings import ReconcileSettings

__all__ = ["ReconcileSettings", "Reconciler", "Report"]
