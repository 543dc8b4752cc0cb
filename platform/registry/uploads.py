"""An upload handler that streams files to disk and stops at MAX_UPLOAD_BYTES.

Installed for every request through FILE_UPLOAD_HANDLERS. It refuses a body
whose declared length is already too large before reading any of it, and
counts the bytes it actually receives, so a chunked upload without a
Content-Length is cut off at the same limit. The partial temporary file is
closed (and so deleted) before `UploadTooLarge` propagates to the API.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from .errors import UploadTooLarge

# Multipart framing (boundaries, part headers, small form fields) on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def upload_too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        "upload_too_large", f"the upload exceeds the limit of {limit} bytes (MAX_UPLOAD_BYTES)", field="archive"
    )


class LimitedUploadHandler(TemporaryFileUploadHandler):
    def __init__(self, request=None) -> None:
        super().__init__(request)
        self.limit = settings.MAX_UPLOAD_BYTES
        self.received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > self.limit + MULTIPART_OVERHEAD:
            raise upload_too_large(self.limit)
        return super().handle_raw_input(input_data, META, content_length, boundary, encoding)

    def new_file(self, *args, **kwargs) -> None:
        self.received = 0
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.file.close()
            raise upload_too_large(self.limit)
        return super().receive_data_chunk(raw_data, start)
