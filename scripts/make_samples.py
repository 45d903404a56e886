"""Regenerate the binary files of the sample knowledge base (knowledge_base/samples/).

The handbook is fictional, written for this project. The Markdown files are edited by hand;
this script writes the .docx, .xlsx and .pdf ones. It needs python-docx, openpyxl, fpdf2 and a
CJK TrueType font (Debian: fonts-wqy-microhei); it is a maintainer's tool, not part of the install.

    .venv/bin/pip install fpdf2 && .venv/bin/python scripts/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "knowledge_base" / "samples"
FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def travel_docx() -> None:
    import docx

    document = docx.Document()
    document.add_heading("澄川科技差旅管理办法", level=1)
    document.add_paragraph("本办法适用于澄川科技全体员工因公出差的申请、预订、住宿与报销。")
    document.add_heading("一、出差申请", level=2)
    document.add_paragraph(
        "出差须在出发前三个工作日通过OA系统提交申请，注明目的地、事由、天数和预算。"
        "单次预算超过两万元的出差，须经分管副总裁批准。"
    )
    document.add_heading("二、交通标准", level=2)
    document.add_paragraph(
        "国内出差优先乘坐高铁二等座；单程超过六小时或航程超过八百公里的，可乘坐经济舱。"
        "总监及以上职级可乘坐高铁一等座。出租车费用凭发票实报实销。"
    )
    document.add_heading("三、住宿与补贴标准", level=2)
    document.add_paragraph("住宿费按城市等级设上限，伙食补贴按天发放，具体如下表：")
    table = document.add_table(rows=1, cols=3)
    for cell, text in zip(table.rows[0].cells, ["城市等级", "住宿上限（元/晚）", "伙食补贴（元/天）"], strict=True):
        cell.text = text
    for row in [
        ("一线城市（北京、上海、广州、深圳）", "600", "120"),
        ("省会城市", "450", "100"),
        ("其他城市", "350", "80"),
    ]:
        cells = table.add_row().cells
        for cell, text in zip(cells, row, strict=True):
            cell.text = text
    document.add_heading("四、报销时限", level=2)
    document.add_paragraph("出差结束后十个工作日内，须在OA系统提交差旅报销单并上传电子发票，逾期不予报销。")
    document.save(str(SAMPLES / "差旅管理办法.docx"))


def benefits_xlsx() -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "福利 Benefits"
    sheet.append(["项目 Item", "说明 Description", "标准 Amount"])
    rows = [
        (
            "餐补 Meal allowance",
            "每个工作日发放，随工资到账 Paid with salary for each working day",
            "35元/天 CNY 35 per day",
        ),
        ("交通补贴 Commuting", "每月固定发放 Fixed monthly allowance", "500元/月 CNY 500 per month"),
        (
            "体检 Health check",
            "每年一次，可携一名家属 Once a year, one family member may join",
            "1,500元/年 CNY 1,500 per year",
        ),
        (
            "学习基金 Learning fund",
            "课程、书籍与认证考试 Courses, books and certification exams",
            "6,000元/年 CNY 6,000 per year",
        ),
        ("健身补贴 Gym subsidy", "凭发票报销 Reimbursed against receipts", "200元/月 CNY 200 per month"),
    ]
    for row in rows:
        sheet.append(list(row))
    contacts = book.create_sheet("联系人 Contacts")
    contacts.append(["部门 Department", "联系人 Contact", "邮箱 E-mail"])
    contacts.append(["人力资源 HR", "林晓雯 Lin Xiaowen", "hr@lumenridge.example"])
    contacts.append(["IT 服务台 IT help desk", "Marco Rossi", "it-help@lumenridge.example"])
    contacts.append(["财务 Finance", "陈立 Chen Li", "finance@lumenridge.example"])
    book.save(str(SAMPLES / "benefits-福利.xlsx"))


def onboarding_pdf() -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_font("wqy", "", str(FONT))
    pdf.set_font("wqy", size=12)
    pages = [
        (
            "New Employee Onboarding Guide / 新员工入职指南",
            "Welcome to Lumen Ridge Technologies. On your first day, report to the reception on the 12th floor "
            "at 9:30 a.m. and bring your ID card and bank card. The IT help desk issues your laptop and badge "
            "before noon. Your manager assigns an onboarding buddy who answers questions during the first "
            "month.\n\n"
            "入职第一天上午9:30请到12楼前台报到，携带身份证和银行卡。IT服务台会在中午前发放笔记本电脑和工牌。"
            "直属经理会为你指定一位入职伙伴，在第一个月内解答你的问题。",
        ),
        (
            "Probation and reviews / 试用期与考核",
            "The probation period is three months. A review meeting with your manager takes place in the tenth "
            "week; the result is confirmed in writing before the end of probation. During probation you may "
            "take annual leave in proportion to the days worked.\n\n"
            "试用期为三个月。第十周与直属经理进行转正评估面谈，结果在试用期结束前书面确认。"
            "试用期内可按已工作天数折算享受年假。",
        ),
    ]
    for title, body in pages:
        pdf.add_page()
        pdf.set_font_size(16)
        pdf.multi_cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font_size(12)
        pdf.multi_cell(0, 8, body, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(SAMPLES / "onboarding-入职指南.pdf"))


if __name__ == "__main__":
    SAMPLES.mkdir(parents=True, exist_ok=True)
    travel_docx()
    benefits_xlsx()
    onboarding_pdf()
