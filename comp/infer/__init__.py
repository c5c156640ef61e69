"""Inference: trained models found, loaded and run (``models``, ``onnxrt``), ``comp predict`` with TTA
(``predict``, ``tta``), ``comp ensemble`` (``ensemble``, ``decision``, ``ledger``) and ``comp score`` (``score``)."""
