"""Page-number pagination with a bounded page size: ?page=N&page_size=M (M at most MAX)."""

from rest_framework.pagination import CursorPagination, PageNumberPagination


class Pages(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ClipCursor(CursorPagination):
    """Clips page by keyset on the id (no OFFSET, no COUNT over a million rows), newest first."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "-id"
