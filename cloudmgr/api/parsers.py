"""The API's JSON parser: DRF's, refusing what no OpenStack body holds and no database stores.

A NUL character anywhere (a key or a value) is a 400 on every database: PostgreSQL stores none
(text and jsonb alike), and no OpenStack name, id or value needs one. Nesting deeper than
Python's recursion limit is a 400 too, not a RecursionError."""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


def _holds_nul(data) -> bool:
    pending = [data]  # a loop, not recursion: the data may nest as deep as the decoder allowed
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body nests too deeply.") from None
        if _holds_nul(data):
            raise ParseError("Null characters are not allowed.")
        return data
