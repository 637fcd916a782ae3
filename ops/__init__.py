"""Operations: the reaper, the autoscaler, lag readers, Celery pool control, `agentq status`
and the local process stack."""
