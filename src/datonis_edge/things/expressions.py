"""Derived metrics: an expression over the latest and previous values of its inputs, in the
Datonis gateway's words `latestValue[i]` and `previousValue[i]`.

Evaluated by simpleeval (an AST walker with a whitelist), never by Python's eval: no names
but those two lists, no attributes, no imports; functions abs, min, max, round only.
Imports nothing of the package.
"""

from __future__ import annotations

import ast
from typing import Any

from simpleeval import InvalidExpression, SimpleEval

FUNCTIONS = {"abs": abs, "min": min, "max": max, "round": round}


class ExpressionError(ValueError):
    pass


class Expression:
    def __init__(self, text: str, inputs: int) -> None:
        self.text = text
        self.inputs = inputs
        self._evaluator = SimpleEval(functions=FUNCTIONS, names={})
        try:
            self._parsed = self._evaluator.parse(text)
        except SyntaxError as exc:
            raise ExpressionError(f"'{text}' is not a valid expression ({exc.msg})") from None
        for node in ast.walk(self._parsed):
            if isinstance(node, ast.Subscript):
                index = node.slice
                if not (isinstance(index, ast.Constant) and isinstance(index.value, int)):
                    raise ExpressionError(
                        f"'{text}': index latestValue/previousValue with a number, like latestValue[0]"
                    )
                if not 0 <= index.value < inputs:
                    raise ExpressionError(
                        f"'{text}': index {index.value} is out of range; there are {inputs} inputs (0 to {inputs - 1})"
                    )
        try:  # a trial run catches unknown names and functions now, not on the shop floor
            self.evaluate([2.0] * inputs, [1.0] * inputs)
        except (ZeroDivisionError, TypeError, ValueError):
            pass
        except InvalidExpression as exc:
            raise ExpressionError(
                f"'{text}': {exc.message if hasattr(exc, 'message') else exc}"
            ) from None

    def evaluate(self, latest: list[Any], previous: list[Any]) -> Any:
        self._evaluator.names = {"latestValue": latest, "previousValue": previous}
        return self._evaluator.eval(self.text, previously_parsed=self._parsed)
