"""The bottom floor: the result type, the errors a user can cause, per-call hooks and one capture() of a layer's
output, input checks and target scores, fx tracing. Imports nothing else from interpret/.
"""
