"""The consumer side: rebuild the books from the live topic (``books``: the rules; ``consumer``: the
reader around them; ``history``: starting from the archive's books at a past time), the terminal
table of ``optionstream consume`` and the live web view (``web``)."""

from optionstream_pipeline.consume.books import BookBuilder, ContinuityError, OrderBook
from optionstream_pipeline.consume.consumer import BookConsumer, BookUpdate
from optionstream_pipeline.consume.history import ArchiveMismatch
from optionstream_pipeline.consume.selection import Selection

__all__ = ["ArchiveMismatch", "BookBuilder", "BookConsumer", "BookUpdate", "ContinuityError", "OrderBook", "Selection"]
