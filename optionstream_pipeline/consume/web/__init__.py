"""The live web view of the books (``optionstream ui``): a Starlette app and the page it serves."""
