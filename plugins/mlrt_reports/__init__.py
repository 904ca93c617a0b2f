"""The built-in error-analysis reports (see :mod:`mlrt.reports` for the interface).

``bias_variance``, ``confusion``, ``per_class``, ``skew``, ``slices``,
``error_categories``, ``fairness`` and ``business``; each lives in a module
of its own and is registered as a ``trylast`` fallback, so an installed
plugin can replace any of them by name.
"""

from __future__ import annotations

from mlrt import hookimpl
from mlrt.reports import Report


@hookimpl(trylast=True)
def mlrt_reports() -> list[Report]:
    from mlrt_reports.bias_variance import BiasVarianceReport
    from mlrt_reports.business import BusinessReport
    from mlrt_reports.categories import ErrorCategoriesReport
    from mlrt_reports.classes import ConfusionReport, PerClassReport
    from mlrt_reports.fairness import FairnessReport
    from mlrt_reports.skew import SkewReport
    from mlrt_reports.slices import SlicesReport

    return [
        BiasVarianceReport(),
        ConfusionReport(),
        PerClassReport(),
        SkewReport(),
        SlicesReport(),
        ErrorCategoriesReport(),
        FairnessReport(),
        BusinessReport(),
    ]
