-- Argo CD health check for runnerfleet.dev/v1alpha1 RunnerScaleSet.
--
-- Install as the argocd-cm key resource.customizations.health.runnerfleet.dev_RunnerScaleSet
-- (see README.md next to this file). Argo CD sets the global `obj` to the live object and runs
-- the script without Lua's string/math libraries, so only base functions are used here, and
-- every field may be missing.
--
--   Progressing  no status yet, or status.observedGeneration < metadata.generation
--   Suspended    spec.suspend is true, or the operator is in global standby (condition
--                Standby=True): no new runners; busy ones finish their jobs
--   Degraded     ConfigValid, NodePoolReady, PodsAdmitted or RunnersHealthy is False, or
--                GitHubReachable is False (GitHub failing or rate limited: said so)
--   Healthy      Ready is True (message: desired/idle/busy/pending runner counts)
--   Progressing  Ready is False with reason RollingOut: the runner template changed and
--                outdated idle runners are being replaced (message: updated/outdated counts)
--   Progressing  anything else (e.g. Ready False with reason Unknown, not reconciled yet)

local hs = {}

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function count(value)
  if type(value) ~= "number" then
    return "0"
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

local function is_false(cond)
  return cond ~= nil and cond.status == "False"
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
  hs.message = "spec.suspend is true: no new runners are created; " .. count(status.busy)
    .. " busy runners finish their jobs"
  return hs
end

local standby = find_condition(status, "Standby")
if type(standby) == "table" and standby.status == "True" then
  hs.status = "Suspended"
  hs.message = "the operator is in standby (blue/green): no new runners; " .. count(status.busy)
    .. " busy runners finish their jobs"
  return hs
end

-- Every False condition that needs a person, in order of how actionable it is.
local problems = ""
local function add(problem)
  if problems ~= "" then
    problems = problems .. "; "
  end
  problems = problems .. problem
end

local blocking = { "ConfigValid", "NodePoolReady", "PodsAdmitted", "RunnersHealthy" }
for _, ctype in ipairs(blocking) do
  local cond = find_condition(status, ctype)
  if is_false(cond) then
    add(ctype .. " is False (" .. text(cond.reason) .. "): " .. text(cond.message))
  end
end

local github = find_condition(status, "GitHubReachable")
if is_false(github) then
  if github.reason == "RateLimited" then
    add("GitHub rate limit exhausted (GitHubReachable is False, RateLimited): "
      .. text(github.message))
  else
    add("GitHub is failing (GitHubReachable is False, " .. text(github.reason) .. "): "
      .. text(github.message))
  end
end

if problems ~= "" then
  hs.status = "Degraded"
  hs.message = problems
  return hs
end

local ready = find_condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "runners: " .. count(status.desired) .. " desired, " .. count(status.idle)
    .. " idle, " .. count(status.busy) .. " busy, " .. count(status.pending) .. " pending"
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.reason == "RollingOut" then
  hs.message = "rolling out a new runner template: " .. count(status.updated) .. " updated, "
    .. count(status.outdated) .. " outdated (idle ones are replaced, busy ones finish their job)"
elseif ready ~= nil then
  hs.message = "Ready is " .. text(ready.status) .. " (" .. text(ready.reason) .. "): "
    .. text(ready.message)
else
  hs.message = "waiting for the operator: no Ready condition yet"
end
return hs
