// The status page: the status API every second, as tables.
function esc(s){return String(s ?? "").replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]))}
function rows(el, items, cols){
  el.innerHTML = "<tr>"+cols.map(c=>"<th>"+c+"</th>").join("")+"</tr>" +
    items.map(i=>"<tr>"+cols.map(c=>"<td"+(c==="last_error"&&i[c]?" class=err":"")+">"+esc(i[c]!==null&&typeof i[c]==="object"?JSON.stringify(i[c]):i[c])+"</td>").join("")+"</tr>").join("");
}
async function refresh(){
  try{
    const r = await fetch("/api/v1/status", {credentials: "same-origin"});
    if (r.status === 401) { location.href = "/login?next=/"; return; }
    const s = await r.json();
    const role = document.getElementById("role");
    role.textContent = "— " + s.role + " (epoch " + s.epoch + ")"; role.className = s.role;
    let html = "<p>instance <b>"+esc(s.instance_id)+"</b></p>";
    if (s.outbox) html += "<p>outbox: <b>"+s.outbox.pending+"</b> pending ("+s.outbox.bytes+" bytes) · accepted "+s.counters.accepted+" · delivered "+s.counters.delivered+" · declined "+s.counters.declined+" · evicted "+s.counters.evicted+"</p>";
    if (s.master) html += "<p>master is <b>"+esc(s.master.instance_id)+"</b> at <a href='"+esc(s.master.console_url)+"'>"+esc(s.master.console_url)+"</a></p>";
    document.getElementById("summary").innerHTML = html;
    rows(document.getElementById("services"), s.services||[], ["name","type","state","last_error","counters"]);
    rows(document.getElementById("uplinks"), s.uplinks||[], ["name","state","last_error"]);
    rows(document.getElementById("alerts"), (s.alerts||[]).slice().reverse(), ["level","message"]);
  }catch(e){ document.getElementById("role").textContent = "— unreachable"; }
}
refresh(); setInterval(refresh, 1000);
