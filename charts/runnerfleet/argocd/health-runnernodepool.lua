-- Argo CD health check for runnerfleet.dev/v1alpha1 RunnerNodePool (cluster-scoped).
--
-- Install as the argocd-cm key resource.customizations.health.runnerfleet.dev_RunnerNodePool
-- (see README.md next to this file). Argo CD sets the global `obj` to the live object and runs
-- the script without Lua's string/math libraries, so only base functions are used here, and
-- every field may be missing.
--
--   Degraded     being deleted and Ready False with reason DeletionBlocked (scale sets still
--                name the pool). Argo CD itself reports any object with a deletionTimestamp as
--                Progressing "Pending deletion" without running this script.
--   Progressing  being deleted otherwise; no status yet; or observedGeneration < generation
--   Healthy      Ready True (message: status.mode and status.nodes)
--   Degraded     Ready False: NoMatchingNodes, NodeClassRefMissing, StaticSelectorMissing,
--                NodesHeldByOtherPool, NodePoolRejected, InvalidSpec
--   Progressing  anything else

local hs = {}

local FAILURES = {
  DeletionBlocked = true,
  InvalidSpec = true,
  NoMatchingNodes = true,
  NodeClassRefMissing = true,
  NodePoolRejected = true,
  NodesHeldByOtherPool = true,
  StaticSelectorMissing = true,
}

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function find_condition(status, ctype)
  if type(status) ~= "table" or type(status.conditions) ~= "table" then
    return nil
  end
  for _, cond in ipairs(status.conditions) do
    if type(cond) == "table" and cond.type == ctype then
      return cond
    end
  end
  return nil
end

-- Why the operator has not reported on the current spec yet, or nil if it has.
local function waiting_for_operator(meta, status)
  if type(status) ~= "table" then
    return "waiting for the operator: no status yet"
  end
  local seen = tonumber(status.observedGeneration)
  if seen == nil then
    return "waiting for the operator: it has not reported on this object yet"
  end
  local generation = tonumber(meta.generation)
  if generation ~= nil and seen < generation then
    return "waiting for the operator to observe generation " .. text(generation)
      .. " (status is for generation " .. text(seen) .. ")"
  end
  return nil
end

local function failed(ready)
  hs.status = "Degraded"
  hs.message = text(ready.reason) .. ": " .. text(ready.message)
  return hs
end

local meta = obj.metadata
if type(meta) ~= "table" then
  meta = {}
end
local status = obj.status
local ready = find_condition(status, "Ready")

if meta.deletionTimestamp ~= nil then
  if ready ~= nil and ready.status == "False" and ready.reason == "DeletionBlocked" then
    return failed(ready)
  end
  hs.status = "Progressing"
  hs.message = "being deleted: the operator is releasing the pool's nodes"
  return hs
end

local waiting = waiting_for_operator(meta, status)
if waiting ~= nil then
  hs.status = "Progressing"
  hs.message = waiting
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  local mode = status.mode
  if mode == nil then
    mode = "unknown"
  end
  local nodes = status.nodes
  if type(nodes) ~= "number" then
    nodes = 0
  end
  hs.message = text(mode) .. " mode: " .. text(nodes) .. " nodes in the pool"
  if status.nodePool ~= nil then
    hs.message = hs.message .. " (Karpenter NodePool " .. text(status.nodePool) .. ")"
  end
  if type(status.scaleSets) == "table" then
    hs.message = hs.message .. "; used by " .. text(#status.scaleSets) .. " scale sets"
  end
  return hs
end

if ready ~= nil and ready.status == "False" and FAILURES[ready.reason] then
  return failed(ready)
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = "Ready is " .. text(ready.status) .. " (" .. text(ready.reason) .. "): "
    .. text(ready.message)
else
  hs.message = "waiting for the operator: no Ready condition yet"
end
return hs
