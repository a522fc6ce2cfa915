"""Scoring traces against labels: the Aff-Wild2 label files (``labels``), the CCC
(``metrics``) and ``affbatch eval`` with the challenges' protocol (``evaluate``)."""
