-- Argo CD health check for runnerfleet.dev/v1alpha1 TeamListener.
--
-- Install as the argocd-cm key resource.customizations.health.runnerfleet.dev_TeamListener
-- (see README.md next to this file). Argo CD sets the global `obj` to the live object and runs
-- the script without Lua's string/math libraries, so only base functions are used here, and
-- every field may be missing.
--
--   Progressing  no status yet, or status.observedGeneration < metadata.generation
--   Suspended    spec.suspend is true (the listener is scaled to 0)
--   Degraded     Ready False with reason ChildRejected (the apiserver refused one of the
--                listener's objects)
--   Progressing  Ready False otherwise (ListenerNotReady: the listener pod is not ready yet)
--   Degraded     Ready True but Polling False: RateLimited, or NoRecentPoll after the listener
--                had polled successfully before (it stopped reaching GitHub)
--   Progressing  Ready True, Polling False, and no successful poll yet (first poll pending)
--   Healthy      Ready True and polling

local hs = {}

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

local meta = obj.metadata
if type(meta) ~= "table" then
  meta = {}
end
local spec = obj.spec
if type(spec) ~= "table" then
  spec = {}
end
local status = obj.status

local waiting = waiting_for_operator(meta, status)
if waiting ~= nil then
  hs.status = "Progressing"
  hs.message = waiting
  return hs
end

if spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: the listener is scaled to 0"
  return hs
end

local ready = find_condition(status, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator: no Ready condition yet"
  return hs
end

if ready.status ~= "True" then
  if ready.reason == "ChildRejected" then
    hs.status = "Degraded"
    hs.message = "the apiserver rejected the listener's objects (ChildRejected): "
      .. text(ready.message)
  else
    hs.status = "Progressing"
    hs.message = "Ready is " .. text(ready.status) .. " (" .. text(ready.reason) .. "): "
      .. text(ready.message)
  end
  return hs
end

local poll = status.poll
if type(poll) ~= "table" then
  poll = {}
end
local polling = find_condition(status, "Polling")
if polling ~= nil and polling.status == "False" then
  if polling.reason == "RateLimited" then
    hs.status = "Degraded"
    hs.message = "GitHub rate limit exhausted (Polling is False, RateLimited): "
      .. text(polling.message)
  elseif poll.lastSuccessfulPoll ~= nil then
    hs.status = "Degraded"
    hs.message = "the listener stopped polling GitHub (Polling is False, " .. text(polling.reason)
      .. "): last successful poll " .. text(poll.lastSuccessfulPoll)
  else
    hs.status = "Progressing"
    hs.message = "the listener pod is ready; waiting for its first successful GitHub poll"
  end
  return hs
end

hs.status = "Healthy"
hs.message = "the listener pod is ready"
if poll.lastSuccessfulPoll ~= nil then
  hs.message = hs.message .. "; last successful poll " .. text(poll.lastSuccessfulPoll)
end
if type(poll.queuedJobs) == "number" then
  hs.message = hs.message .. "; " .. text(poll.queuedJobs) .. " queued jobs"
end
if type(poll.unmatchedJobs) == "number" and poll.unmatchedJobs > 0 then
  hs.message = hs.message .. " (" .. text(poll.unmatchedJobs)
    .. " match no scale set's labels)"
end
return hs
